// GENERATED from control/schema.py by `python -m control.schema_docs`: do not edit by hand.
// The control protocol's message types (docs/protocol.md), by the schema's class names.

export const PROTOCOL_VERSION = 1;

/** A frozen table whose unknown names throw (a misspelt message type fails loudly). */
function strict(name, table) {
  return new Proxy(Object.freeze(table), {
    get(target, key) {
      if (typeof key === 'string' && !(key in target)) throw new Error(`${name}.${key} is not in the wire schema`);
      return target[key];
    },
  });
}

/** Client → server request types. */
export const RequestType = strict('RequestType', {
  SessionStart: 'session.start',
  SessionStop: 'session.stop',
  Vad: 'vad',
  TokenRefresh: 'token.refresh',
  Ping: 'ping',
  Subscribe: 'subscribe',
  Unsubscribe: 'unsubscribe',
  AuthRefresh: 'auth.refresh',
});

/** Server → client message types. */
export const MessageType = strict('MessageType', {
  Hello: 'hello',
  SessionReady: 'session.ready',
  SpeechStart: 'speech.start',
  InterimTranscript: 'transcript.interim',
  FinalTranscript: 'transcript.final',
  SpeechEnd: 'speech.end',
  PublishStart: 'publish.start',
  PublishStop: 'publish.stop',
  Token: 'token',
  Status: 'status',
  SessionEnded: 'session.ended',
  Pong: 'pong',
  Subscribed: 'subscribed',
  Unsubscribed: 'unsubscribed',
  Error: 'error',
  AuthExpiring: 'auth.expiring',
  AuthExpired: 'auth.expired',
  AuthRefreshed: 'auth.refreshed',
  RecordingReady: 'recording.ready',
  Command: 'command',
});
