// roomscribe web example: the microphone → LiveKit (or the ws fallback) → live transcripts.
//
// Control protocol: docs/protocol.md. Plain ES module, no build step. The LiveKit browser SDK is
// the UMD build loaded by index.html from /vendor/livekit-client/ (window.LivekitClient). Message
// types come from protocol.js, generated from the server's wire schema (control/schema.py).

import { MessageType, PROTOCOL_VERSION, RequestType } from './protocol.js';

const LK = window.LivekitClient || null;
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const PCM_FORMAT = { encoding: 'pcm_s16le', sample_rate: 16000, channels: 1 };
const MAX_BUFFERED_FRAMES = 500; // 10 s of 20 ms frames kept while the control socket is down
const PING_EVERY_MS = 10000;
const PONG_TIMEOUT_MS = 8000;

const AUTH_HINTS = {
  'auth.missing_token': 'No control token was sent.',
  'auth.malformed_token': 'The control token is not a valid token — check the ?token= value.',
  'auth.bad_signature': 'The control token was not signed by this server — make a new one with `roomscribe token --user NAME`.',
  'auth.token_expired': 'The control token has expired — make a new one with `roomscribe token --user NAME`.',
};

const ENDED_REASONS = {
  stopped: 'The session has ended.',
  replaced: 'This session was replaced: the same user started a session somewhere else (another tab or device).',
  resumed_elsewhere: 'This session continued in another tab or device.',
  server_shutdown: 'The server is shutting down; the session has ended.',
  grace_expired: 'The session expired while the page was disconnected.',
};

/** An error to show on the page; `fatal` ones stop retrying. */
class PageError extends Error {
  constructor(code, message, { fatal = false } = {}) {
    super(message);
    this.code = code;
    this.fatal = fatal;
  }
}

const state = {
  phase: 'idle', // idle | starting | running | reconnecting | stopping | ended | failed
  transport: params.get('transport') === 'ws' ? 'ws' : 'livekit',
  transportChosen: params.has('transport'), // explicitly, by URL or by the switch
  token: params.get('token') || null,
  tokenSource: params.get('token') ? 'url' : null,
  user: null,
  ws: null,
  control: 'disconnected', // disconnected | connecting | connected | reconnecting
  hello: null,
  sessionId: null,
  sessionTransport: null,
  sessionReady: false,
  lastSeq: 0,
  resumes: 0,
  reconnectAttempt: 0,
  refreshingToken: false, // an auth.refresh is being prepared
  reconnectTimer: null,
  pingTimer: null,
  pongDeadline: null,
  requestNo: 0,
  pendingStartId: null,
  // LiveKit
  lk: null, // {url, room, identity, token, expires_at, publish_gating}
  lkToken: null,
  lkState: 'off',
  room: null,
  lkTrack: null, // the MediaStreamTrack (a clone of the mic) published into the current room
  lkPub: null,
  publishWanted: false,
  publishChain: Promise.resolve(),
  lkReconnectTimer: null,
  lkAttempt: 0,
  // audio
  micStream: null,
  micTrack: null,
  audioCtx: null,
  micNode: null,
  pcmQueue: [],
  framesSent: 0,
  level: 0,
  // local VAD (publish_gating "vad")
  vad: { floor: -60, speaking: false, above: 0, below: 0, sent: null },
  // transcript
  seenFinals: new Set(),
  interimUtterance: null,
};

// What the tests (and the curious) can read: every interim shown, every final, every error.
window.roomscribe = { state, interims: [], finals: [], errors: [], events: [], statuses: [], lkJoins: [] };

// ---------------------------------------------------------------- view ---------------------------

function log(text, kind = 'info') {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (kind === 'error') li.className = 'err';
  const list = $('log');
  list.appendChild(li);
  while (list.children.length > 300) list.removeChild(list.firstChild);
}

function showError(message, code = 'error') {
  const el = $('error');
  el.textContent = message;
  el.hidden = false;
  el.dataset.code = code;
  window.roomscribe.errors.push({ code, message, t: Date.now() });
  log(`error: ${message}`, 'error');
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

let noticeTimer = null;

/** A non-error notice; `forMs` makes it go away by itself (busy/degraded states pass). */
function showNotice(message, forMs = 0) {
  const el = $('notice');
  el.textContent = message || '';
  el.hidden = !message;
  clearTimeout(noticeTimer);
  if (message && forMs) noticeTimer = setTimeout(() => showNotice(''), forMs);
}

function setStatus(text, dot = 'idle') {
  $('status').textContent = text;
  $('status-dot').className = `dot ${dot}`;
  window.roomscribe.statuses.push(text);
}

function render() {
  const running = !['idle', 'ended', 'failed'].includes(state.phase);
  $('start').hidden = running;
  $('stop').hidden = !running;
  $('stop').disabled = state.phase === 'stopping';
  $('start').textContent = state.phase === 'idle' ? 'Start' : 'Start again';
  $('transport-ws').disabled = running;
  $('language').disabled = running;
  $('keyterms').disabled = running;
  $('words').disabled = running;

  const control = {
    disconnected: 'not connected',
    connecting: 'connecting…',
    connected: `connected${state.hello ? ` as ${state.hello.user}` : ''}`,
    reconnecting: `reconnecting… (attempt ${state.reconnectAttempt})`,
  }[state.control];
  $('pill-control').textContent = control;
  $('pill-session').textContent = state.sessionId
    ? `${state.sessionReady ? 'live' : 'resuming'} · ${state.sessionId}${state.resumes ? ` · resumed ×${state.resumes}` : ''}`
    : state.phase === 'starting' ? 'starting…' : 'none';
  if (state.transport === 'ws') {
    $('pill-media').textContent = state.framesSent ? `WebSocket · ${(state.framesSent / 50).toFixed(0)} s sent` : 'WebSocket · PCM 16 kHz';
  } else {
    $('pill-media').textContent = `LiveKit · ${state.lkState}`;
  }
  let mic = 'off';
  if (state.micTrack && state.micTrack.readyState === 'live') {
    if (state.transport === 'ws') mic = state.sessionReady ? 'streaming' : 'on';
    else if (state.lkPub && !state.lkPub.isMuted) mic = 'published';
    else if (state.lkPub) mic = 'muted (waiting for speech)';
    else mic = state.publishWanted ? 'publishing…' : 'on, not published';
  }
  $('pill-mic').textContent = mic;
  $('empty').hidden = $('finals').children.length > 0 || !!$('interim').textContent;
}

function fmtSeconds(s) {
  return typeof s === 'number' ? `${s.toFixed(1)} s` : '';
}

function showInterim(msg) {
  const key = `${state.sessionId}:${msg.utterance_id}`;
  if (state.seenFinals.has(key)) return; // late interim of a finished utterance
  state.interimUtterance = key;
  $('interim').textContent = msg.text;
  window.roomscribe.interims.push({ text: msg.text, utterance_id: msg.utterance_id, seq: msg.seq, t: Date.now() });
  render();
}

function clearInterim(key) {
  if (!key || state.interimUtterance === key) {
    $('interim').textContent = '';
    state.interimUtterance = null;
  }
}

function addFinal(msg) {
  const key = `${state.sessionId}:${msg.utterance_id}`;
  if (state.seenFinals.has(key)) return; // never shown twice (resume replays, duplicates)
  state.seenFinals.add(key);
  const when = new Date();
  const li = document.createElement('li');
  li.className = 'final';
  li.dataset.utterance = msg.utterance_id;
  li.dataset.seq = msg.seq;
  li.dataset.session = state.sessionId;
  const time = document.createElement('time');
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  time.title = `${fmtSeconds(msg.start)} – ${fmtSeconds(msg.end)} of session audio (${msg.reason || 'final'})`;
  const text = document.createElement('span');
  text.className = 'text';
  if (msg.participant) {
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = msg.participant;
    text.appendChild(who);
  }
  if (Array.isArray(msg.words) && msg.words.length) {
    msg.words.forEach((w, i) => {
      const word = document.createElement('span');
      word.className = 'word';
      word.textContent = w.word;
      const confidence = typeof w.confidence === 'number' ? w.confidence : w.probability;
      word.title = `${fmtSeconds(w.start)} – ${fmtSeconds(w.end)}, confidence ${confidence.toFixed(2)}`;
      text.append(...(i ? [' ', word] : [word]));
    });
  } else {
    text.appendChild(document.createTextNode(msg.text));
  }
  if (msg.language) {  // detected (language "auto")
    const lang = document.createElement('span');
    lang.className = 'lang';
    lang.textContent = msg.language;
    lang.title = `detected with probability ${msg.language_probability}`;
    text.appendChild(lang);
  }
  li.append(time, text);
  $('finals').appendChild(li);
  li.scrollIntoView({ block: 'nearest' });
  window.roomscribe.finals.push({ text: msg.text, utterance_id: msg.utterance_id, seq: msg.seq, session_id: state.sessionId, t: when.getTime() });
  clearInterim(key);
  render();
}

function setMeter(rms) {
  const db = 20 * Math.log10(Math.max(rms, 1e-6));
  const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
  $('meter').style.width = `${pct.toFixed(0)}%`;
  state.level = db;
}

// ---------------------------------------------------------------- control token ------------------

function randomUser() {
  const bytes = new Uint8Array(3);
  crypto.getRandomValues(bytes);
  return `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

async function acquireToken() {
  if (state.tokenSource === 'url') return;
  state.user = state.user || params.get('user') || randomUser();
  let res;
  try {
    res = await fetch(`/dev/token?user=${encodeURIComponent(state.user)}`, { cache: 'no-store' });
  } catch (e) {
    throw new PageError('server_unreachable', `Cannot reach the roomscribe server at ${location.host}. Is it running?`);
  }
  if (res.status === 404) {
    throw new PageError(
      'no_token',
      'No control token. Open this page with ?token=<control token> (make one with `roomscribe token --user NAME`). ' +
        'Without one, tokens come from /dev/token, which only works while the server runs in dev mode.',
      { fatal: true },
    );
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) {
    const err = body.error || {};
    throw new PageError(err.code || 'dev_token', `Could not get a development token: ${err.message || `HTTP ${res.status}`}.`, { fatal: true });
  }
  state.token = body.token;
  state.tokenSource = 'dev';
  log(`got a development control token for user ${body.user}`);
}

// ---------------------------------------------------------------- control socket -----------------

function controlUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/v1/control?token=${encodeURIComponent(state.token)}`;
}

/** Browsers hide why a WebSocket upgrade failed; ask the same URL over plain HTTP to find out. */
async function explainSocketFailure() {
  let res;
  try {
    res = await fetch(`/v1/control?token=${encodeURIComponent(state.token)}`, { cache: 'no-store' });
  } catch (e) {
    return new PageError('server_unreachable', `Cannot reach the roomscribe server at ${location.host}. Is it running?`);
  }
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    const err = body.error || {};
    const hint = AUTH_HINTS[err.code] || '';
    return new PageError(err.code || 'auth', `The server refused the control token: ${err.message || 'unauthorised'} (${err.code || 'HTTP 401'}). ${hint}`.trim(), {
      fatal: true,
    });
  }
  return new PageError('control_failed', `The control socket could not be opened (the server answered HTTP ${res.status}).`);
}

function connectControl() {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(controlUrl());
    } catch (e) {
      reject(new PageError('control_failed', `Cannot open the control socket: ${e.message}`, { fatal: true }));
      return;
    }
    ws.binaryType = 'arraybuffer';
    state.ws = ws;
    let helloSeen = false;
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return; // echoed audio (not requested)
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        log('the server sent something that is not JSON', 'error');
        return;
      }
      if (msg.type === MessageType.Hello && !helloSeen) {
        helloSeen = true;
        state.hello = msg;
        resolve(msg);
      }
      onControlMessage(msg);
    };
    ws.onclose = async (ev) => {
      if (state.ws === ws) state.ws = null;
      stopPings();
      if (!helloSeen) {
        reject(await explainSocketFailure());
        return;
      }
      onControlClosed(ev);
    };
  });
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(message));
    return true;
  }
  return false;
}

function nextId(prefix) {
  state.requestNo += 1;
  return `${prefix}-${state.requestNo}`;
}

function startPings() {
  stopPings();
  state.pingTimer = setInterval(() => {
    if (state.pongDeadline && Date.now() > state.pongDeadline) {
      log('no answer from the server for a while; reconnecting', 'error');
      if (state.ws) state.ws.close(4000, 'no pong');
      return;
    }
    if (send({ type: RequestType.Ping, id: nextId('ping') }) && !state.pongDeadline) state.pongDeadline = Date.now() + PONG_TIMEOUT_MS;
  }, PING_EVERY_MS);
}

function stopPings() {
  clearInterval(state.pingTimer);
  state.pingTimer = null;
  state.pongDeadline = null;
}

/** session.start's keyterms (the box, comma-separated; left out when empty: the server's) and words. */
function decodingOptions() {
  const options = {};
  const keyterms = $('keyterms').value.split(',').map((t) => t.trim()).filter((t) => t);
  if (keyterms.length) options.keyterms = keyterms;
  if ($('words').checked) options.words = true;
  return options;
}

function sendSessionStart() {
  const id = nextId('start');
  state.pendingStartId = id;
  const msg = { type: RequestType.SessionStart, id, protocol: PROTOCOL_VERSION, transport: state.transport };
  if (state.sessionId) {
    msg.resume = { session_id: state.sessionId, last_seq: state.lastSeq };
    log(`resuming session ${state.sessionId} after event ${state.lastSeq}`);
  } else {
    if (state.transport === 'ws') msg.audio = PCM_FORMAT;
    Object.assign(msg, decodingOptions());
  }
  if (!msg.resume && $('language').value) msg.language = $('language').value;
  send(msg);
}

function onControlMessage(msg) {
  window.roomscribe.events.push(msg);
  if (typeof msg.seq === 'number' && msg.type !== MessageType.SessionReady) {
    if (msg.seq <= state.lastSeq) return; // already seen (a replay after resume)
    state.lastSeq = msg.seq;
  }
  switch (msg.type) {
    case MessageType.Hello:
      log(`connected as ${msg.user}; transports ${msg.transports.join(', ')}`);
      break;
    case MessageType.SessionReady:
      onSessionReady(msg);
      break;
    case MessageType.SpeechStart:
      setStatus('Hearing speech…', 'live');
      break;
    case MessageType.InterimTranscript:
      showInterim(msg);
      break;
    case MessageType.FinalTranscript:
      addFinal(msg);
      break;
    case MessageType.SpeechEnd:
      clearInterim(`${state.sessionId}:${msg.utterance_id}`);
      if (state.phase === 'running') setStatus(listeningText(), 'live');
      break;
    case MessageType.PublishStart:
      log(`server: publish the microphone (${msg.reason || ''})`);
      state.publishWanted = true;
      applyPublish();
      break;
    case MessageType.PublishStop:
      log(`server: stop publishing (${msg.reason || ''})`);
      state.publishWanted = false;
      applyPublish();
      if (msg.reason === 'inactivity') showNotice('No speech for a while: the microphone is muted until you speak again.');
      break;
    case MessageType.Token:
      onLiveKitToken(msg.token, msg.expires_at);
      break;
    case MessageType.Status:
      onServerStatus(msg);
      break;
    case MessageType.SessionEnded:
      onSessionEnded(msg);
      break;
    case MessageType.Pong:
      state.pongDeadline = null;
      break;
    case MessageType.Error:
      onServerError(msg);
      break;
    case MessageType.AuthExpiring:
    case MessageType.AuthExpired:
      refreshControlToken();
      break;
    case MessageType.AuthRefreshed:
      log('control token refreshed');
      break;
    default:
      break;
  }
  render();
}

/** The control token runs out: a development token is renewed in place (`auth.refresh`); a token
 * from ?token= cannot be, and the server closes the socket at expiry. */
async function refreshControlToken() {
  if (state.tokenSource !== 'dev' || state.refreshingToken) return;
  state.refreshingToken = true;
  try {
    await acquireToken();
    send({ type: RequestType.AuthRefresh, token: state.token });
  } catch (e) {
    log(`could not refresh the control token: ${e.message}`, 'error');
  } finally {
    state.refreshingToken = false;
  }
}

function listeningText() {
  return state.transport === 'ws' ? 'Listening (WebSocket fallback) — speak now.' : 'Listening — speak now.';
}

async function onSessionReady(msg) {
  const resumed = !!msg.resumed;
  if (!resumed) {
    state.lastSeq = msg.last_seq || 0;
    state.seenFinals = new Set([...state.seenFinals].filter((k) => !k.startsWith(`${msg.session_id}:`)));
  }
  state.sessionId = msg.session_id;
  state.sessionTransport = msg.transport;
  state.sessionReady = true;
  state.pendingStartId = null;
  state.reconnectAttempt = 0;
  if (resumed) {
    state.resumes += 1;
    log(`session ${msg.session_id} resumed (server at event ${msg.last_seq})`);
    showNotice('');
  } else {
    log(`session ${msg.session_id} started in room ${msg.room} (${msg.transport})`);
  }
  state.phase = 'running';
  clearError();
  setStatus(listeningText(), 'live');
  if (msg.transport === 'ws') {
    flushPcm();
  } else if (msg.livekit) {
    state.lk = { ...msg.livekit }; // a copy: the event log keeps what the server sent
    onLiveKitToken(msg.livekit.token, msg.livekit.expires_at);
    if (!state.room) connectLiveKit();
    if (resumed && state.vad.sent !== null) send({ type: RequestType.Vad, speaking: state.vad.speaking });
  }
  render();
}

function onServerStatus(msg) {
  const plain = {
    listening: 'The server hears your microphone.',
    'livekit.degraded': 'The transcriber lost its LiveKit connection and is reconnecting; transcripts may pause.',
    'livekit.recovered': 'The transcriber is back on LiveKit.',
    'livekit.failed': 'The transcriber could not reconnect to LiveKit.',
    interims_dropped: 'The server is busy: some tentative transcripts were skipped.',
    asr_backlog: 'The server is busy: transcripts are running late.',
    'replay.truncated': 'Some transcripts from while you were disconnected could not be replayed.',
  }[msg.code];
  log(`status ${msg.code}: ${msg.message || ''}`);
  if (msg.code === 'listening') setStatus('Listening — the server hears your microphone. Speak now.', 'live');
  else if (msg.code === 'livekit.failed' || msg.code === 'replay.truncated') showError(plain || msg.message, msg.code);
  else if (msg.code === 'asr_backlog') showNotice(plain, 10000);
  else if (plain && msg.code !== 'interims_dropped') showNotice(plain);
}

function onServerError(msg) {
  const text = `${msg.message || 'The server reported an error'} (${msg.code})`;
  if (msg.code === 'session.not_found' && state.pendingStartId === msg.id && state.sessionId) {
    // The session expired while we were away: start a new one; finals spoken in the gap are lost.
    showNotice('The previous session had expired while the page was disconnected; started a new one.');
    log(text, 'error');
    state.sessionId = null;
    state.sessionReady = false;
    teardownLiveKit();
    sendSessionStart();
    return;
  }
  if (msg.id && msg.id === state.pendingStartId) {
    state.pendingStartId = null;
    showError(`The session could not start: ${text}.`, msg.code);
    stop({ reason: 'error', quiet: true });
    return;
  }
  showError(`Server error: ${text}.`, msg.code);
}

function onSessionEnded(msg) {
  if (msg.session_id && state.sessionId && msg.session_id !== state.sessionId) return;
  const plain = ENDED_REASONS[msg.reason] || `The session ended (${msg.reason}).`;
  log(`session ended: ${msg.reason}`);
  state.sessionId = null;
  state.sessionReady = false;
  if (state.phase === 'stopping') return; // stop() finishes the job
  if (msg.reason !== 'stopped') showError(plain, `ended.${msg.reason}`);
  teardown();
  state.phase = 'ended';
  setStatus(plain, msg.reason === 'stopped' ? 'idle' : 'bad');
}

function onControlClosed(ev) {
  state.control = 'disconnected';
  state.sessionReady = false;
  if (!['running', 'starting', 'reconnecting'].includes(state.phase)) {
    render();
    return;
  }
  log(`control socket closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`, 'error');
  scheduleReconnect();
}

function scheduleReconnect(error) {
  state.phase = 'reconnecting';
  state.control = 'reconnecting';
  state.reconnectAttempt += 1;
  const delay = Math.min(8000, 500 * 2 ** Math.min(state.reconnectAttempt - 1, 4)) * (0.8 + Math.random() * 0.4);
  const why = error ? error.message : 'Lost the connection to the server.';
  showError(`${why} Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s (attempt ${state.reconnectAttempt})…`, error ? error.code : 'control_lost');
  setStatus('Reconnecting to the server…', 'busy');
  render();
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(reconnect, delay);
}

async function reconnect() {
  if (state.phase !== 'reconnecting') return;
  try {
    await bringUp();
    log('control socket reconnected');
  } catch (e) {
    if (e.code === 'auth.token_expired' && state.tokenSource === 'dev') {
      state.token = null; // the next attempt fetches a fresh development token
      return scheduleReconnect(new PageError('token_renewed', 'The control token expired; getting a new one.'));
    }
    failOrRetry(e);
  }
}

/** Token → control socket (hello) → microphone and audio graph → session.start (or resume). */
async function bringUp() {
  if (!state.token) await acquireToken();
  state.control = state.phase === 'reconnecting' ? 'reconnecting' : 'connecting';
  render();
  const hello = await connectControl();
  state.control = 'connected';
  startPings();
  if (!state.sessionId) chooseTransport(hello);
  if (!state.micTrack) {
    setStatus('Opening the microphone…', 'busy');
    await openMic();
    await startAudioGraph();
  }
  setStatus(state.sessionId ? 'Resuming the session…' : 'Starting a session…', 'busy');
  sendSessionStart();
}

function chooseTransport(hello) {
  if (!hello.transports.includes(state.transport) && !state.transportChosen && hello.transports.includes(hello.default_transport)) {
    // The user did not pick one: follow the server (e.g. a ws-only server).
    state.transport = hello.default_transport;
    $('transport-ws').checked = state.transport === 'ws';
    if (state.micNode) state.micNode.port.postMessage({ pcm: state.transport === 'ws' });
    showNotice(`This server offers ${hello.transports.join(', ')}; using ${state.transport === 'ws' ? 'the WebSocket fallback' : 'LiveKit'}.`);
  }
  if (!hello.transports.includes(state.transport)) {
    throw new PageError('transport', `This server does not offer the ${state.transport === 'ws' ? 'WebSocket fallback' : 'LiveKit'} transport (it offers: ${hello.transports.join(', ')}).`, { fatal: true });
  }
}

function failOrRetry(e) {
  if (!(e instanceof PageError) || e.fatal) {
    fail(e);
  } else if (state.phase === 'reconnecting' || state.phase === 'starting') {
    scheduleReconnect(e);
  }
}

// ---------------------------------------------------------------- LiveKit ------------------------

function onLiveKitToken(token, expiresAt) {
  if (!token) return;
  state.lkToken = token;
  if (state.lk) state.lk.token = token;
  // The SDK's own reconnects read the engine's token: hand it the newest one.
  try {
    if (state.room && state.room.engine) state.room.engine.token = token;
  } catch (e) {
    /* not fatal: a full reconnect below uses state.lkToken */
  }
  if (expiresAt) log(`LiveKit token valid until ${new Date(expiresAt * 1000).toLocaleTimeString()}`);
}

async function connectLiveKit() {
  if (!LK || !state.lk) return;
  clearTimeout(state.lkReconnectTimer);
  const room = new LK.Room({ adaptiveStream: false, dynacast: false, stopLocalTrackOnUnpublish: true });
  state.room = room;
  state.lkPub = null;
  state.lkState = 'connecting…';
  render();
  room.on(LK.RoomEvent.Reconnecting, () => {
    state.lkState = 'reconnecting…';
    showNotice('The LiveKit connection dropped; reconnecting…');
    render();
  });
  room.on(LK.RoomEvent.Reconnected, () => {
    state.lkState = 'connected';
    showNotice('');
    log('LiveKit reconnected');
    render();
  });
  room.on(LK.RoomEvent.Disconnected, (reason) => {
    if (state.room !== room) return;
    state.room = null;
    state.lkPub = null;
    state.lkState = 'disconnected';
    render();
    if (state.sessionId && ['running', 'reconnecting'].includes(state.phase)) {
      // Rejoin with the newest token the server gave us.
      state.lkAttempt += 1;
      const delay = Math.min(8000, 500 * 2 ** Math.min(state.lkAttempt - 1, 4));
      const text = `The LiveKit connection was lost (${reasonName(reason)}); rejoining in ${Math.ceil(delay / 1000)} s…`;
      if (state.control === 'connected') showError(text, 'livekit.lost');
      else log(text, 'error'); // the control socket's own message matters more
      state.lkReconnectTimer = setTimeout(connectLiveKit, delay);
    }
  });
  const token = state.lkToken || state.lk.token; // always the newest the server gave us
  window.roomscribe.lkJoins.push({ token, t: Date.now() });
  try {
    await room.connect(state.lk.url, token, { autoSubscribe: false });
  } catch (e) {
    if (state.room !== room) return;
    state.room = null;
    state.lkState = 'failed';
    state.lkAttempt += 1;
    const delay = Math.min(8000, 1000 * 2 ** Math.min(state.lkAttempt - 1, 3));
    const text = `Could not join the LiveKit room at ${state.lk.url}: ${e && e.message ? e.message : e}. Retrying in ${Math.ceil(delay / 1000)} s…`;
    if (state.control === 'connected') showError(text, 'livekit.connect');
    else log(text, 'error');
    render();
    if (state.sessionId && ['running', 'reconnecting'].includes(state.phase)) state.lkReconnectTimer = setTimeout(connectLiveKit, delay);
    return;
  }
  if (state.room !== room) {
    room.disconnect();
    return;
  }
  state.lkAttempt = 0;
  state.lkState = 'connected';
  if ($('error').dataset.code && $('error').dataset.code.startsWith('livekit')) clearError();
  log(`joined LiveKit room ${state.lk.room} as ${state.lk.identity}`);
  applyPublish();
  render();
}

function reasonName(reason) {
  if (LK && LK.DisconnectReason && reason !== undefined && LK.DisconnectReason[reason] !== undefined) return LK.DisconnectReason[reason];
  return reason === undefined ? 'unknown reason' : String(reason);
}

/** Bring the room's microphone publication in line with `publishWanted` (serialised). */
function applyPublish() {
  state.publishChain = state.publishChain.then(async () => {
    const room = state.room;
    if (!room || !LK || room.state !== LK.ConnectionState.Connected || !state.micTrack) return;
    try {
      if (state.publishWanted) {
        if (!state.lkPub) {
          state.lkTrack = state.micTrack.clone(); // the SDK stops it on unpublish; the meter keeps the original
          state.lkPub = await room.localParticipant.publishTrack(state.lkTrack, {
            source: LK.Track.Source.Microphone,
            name: 'microphone',
            // Continuous Opus (no DTX gaps): the start of each phrase reaches the recogniser intact.
            dtx: params.get('dtx') === '1',
            // 64 kb/s: quiet consonants survive the codec (the default speech bitrate loses some).
            audioPreset: { maxBitrate: 64000 },
          });
          log('microphone published');
        } else if (state.lkPub.isMuted) {
          await state.lkPub.track.unmute();
          log('microphone unmuted');
        }
        showNotice('');
      } else if (state.lkPub && !state.lkPub.isMuted) {
        await state.lkPub.track.mute();
        log('microphone muted');
      }
    } catch (e) {
      showError(`Could not publish the microphone: ${e && e.message ? e.message : e}`, 'livekit.publish');
    }
    render();
  });
  return state.publishChain;
}

function teardownLiveKit() {
  clearTimeout(state.lkReconnectTimer);
  const room = state.room;
  state.room = null;
  state.lkPub = null;
  state.lkState = 'off';
  state.publishWanted = false;
  if (room) room.disconnect();
}

// ---------------------------------------------------------------- audio ----------------------------

async function openMic() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new PageError('no_mic', 'This browser cannot capture the microphone here (it needs https or localhost).', { fatal: true });
  }
  // Raw audio by default (the recogniser prefers it); ?processing=1 turns on the browser's noise
  // suppression and automatic gain control.
  const processing = params.get('processing') === '1';
  try {
    state.micStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: processing, autoGainControl: processing },
    });
  } catch (e) {
    const name = e && e.name;
    const why =
      name === 'NotAllowedError'
        ? 'Microphone access was denied. Allow it in the browser (the icon in the address bar) and press Start again.'
        : name === 'NotFoundError'
          ? 'No microphone was found.'
          : `The microphone could not be opened: ${e && e.message ? e.message : e}`;
    throw new PageError('mic', why, { fatal: true });
  }
  state.micTrack = state.micStream.getAudioTracks()[0];
  state.micTrack.addEventListener('ended', () => {
    if (state.phase === 'running') showError('The microphone stopped (unplugged or taken by another app).', 'mic.ended');
  });
}

async function startAudioGraph() {
  const ctx = new AudioContext();
  state.audioCtx = ctx;
  try {
    await ctx.audioWorklet.addModule('/web/audio-worklet.js');
  } catch (e) {
    throw new PageError('worklet', `Could not load the page's audio processor (/web/audio-worklet.js): ${e && e.message ? e.message : e}`, { fatal: true });
  }
  const source = ctx.createMediaStreamSource(state.micStream);
  const node = new AudioWorkletNode(ctx, 'roomscribe-mic', {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { pcm: state.transport === 'ws', targetRate: PCM_FORMAT.sample_rate, frameMs: 20 },
  });
  node.port.onmessage = (ev) => {
    const m = ev.data;
    if (m.type === 'level') onLevel(m.rms);
    else if (m.type === 'pcm') onPcm(m.buffer);
  };
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination); // keeps the graph pulled, plays nothing
  state.micNode = node;
  // Without a user gesture (autostart) the browser may keep audio suspended until a click.
  await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 800))]);
  if (ctx.state !== 'running') {
    showNotice('The browser holds audio until you interact: click anywhere on the page to start the microphone.');
    const resume = async () => {
      await ctx.resume();
      if (ctx.state === 'running') {
        showNotice('');
        document.removeEventListener('click', resume);
      }
    };
    document.addEventListener('click', resume);
  }
  log(`audio running at ${ctx.sampleRate} Hz${state.transport === 'ws' ? ', resampled to 16 kHz in an AudioWorklet' : ''}`);
}

function onLevel(rms) {
  if (!state.audioCtx) return; // a late message after the mic was closed
  setMeter(rms);
  const db = state.level;
  const v = state.vad;
  // Simple energy VAD: a slowly rising noise floor, speech = 12 dB above it for 60 ms,
  // silence = 400 ms below it.
  v.floor = db < v.floor ? db : v.floor + 0.01;
  const threshold = Math.min(-30, Math.max(-55, v.floor + 12));
  if (db > threshold) {
    v.above += 1;
    v.below = 0;
  } else {
    v.below += 1;
    v.above = 0;
  }
  if (!v.speaking && v.above >= 3) v.speaking = true;
  else if (v.speaking && v.below >= 20) v.speaking = false;
  const gated = state.lk && state.lk.publish_gating === 'vad' && state.sessionTransport === 'livekit';
  if (gated && state.sessionReady && v.sent !== v.speaking) {
    if (send({ type: RequestType.Vad, speaking: v.speaking })) v.sent = v.speaking;
  }
}

function onPcm(buffer) {
  if (state.transport !== 'ws' || !['starting', 'running', 'reconnecting'].includes(state.phase)) return;
  if (state.sessionReady && state.ws && state.ws.readyState === WebSocket.OPEN && state.pcmQueue.length === 0) {
    state.ws.send(buffer);
    state.framesSent += 1;
    if (state.framesSent % 50 === 0) render();
    return;
  }
  state.pcmQueue.push(buffer);
  if (state.pcmQueue.length > MAX_BUFFERED_FRAMES) state.pcmQueue.shift();
  if (state.sessionReady) flushPcm();
}

function flushPcm() {
  if (!state.sessionReady || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  while (state.pcmQueue.length) {
    state.ws.send(state.pcmQueue.shift());
    state.framesSent += 1;
  }
}

function stopAudio() {
  if (state.micNode) state.micNode.port.onmessage = null;
  if (state.audioCtx) state.audioCtx.close().catch(() => {});
  state.audioCtx = null;
  state.micNode = null;
  if (state.micStream) state.micStream.getTracks().forEach((t) => t.stop());
  state.micStream = null;
  state.micTrack = null;
  state.pcmQueue = [];
  setMeter(0);
}

// ---------------------------------------------------------------- start / stop ---------------------

function fail(e) {
  const message = e instanceof PageError ? e.message : `Something went wrong: ${e && e.message ? e.message : e}`;
  showError(message, e.code || 'error');
  teardown();
  state.phase = 'failed';
  setStatus('Stopped — see the message below.', 'bad');
  render();
}

function teardown() {
  clearTimeout(state.reconnectTimer);
  stopPings();
  teardownLiveKit();
  stopAudio();
  const ws = state.ws;
  state.ws = null;
  state.control = 'disconnected';
  state.sessionReady = false;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'bye');
}

async function start() {
  if (!['idle', 'ended', 'failed'].includes(state.phase)) return;
  clearError();
  showNotice('');
  state.transport = $('transport-ws').checked ? 'ws' : 'livekit';
  state.phase = 'starting';
  state.sessionId = null;
  state.lastSeq = 0;
  state.framesSent = 0;
  state.vad = { floor: -60, speaking: false, above: 0, below: 0, sent: null };
  setStatus('Starting…', 'busy');
  render();
  if (state.transport === 'livekit' && !LK) {
    fail(new PageError('no_sdk', 'The LiveKit browser SDK did not load (/vendor/livekit-client/ is missing — run `npm ci`). Switch on the WebSocket fallback to continue without it.'));
    return;
  }
  if (state.tokenSource === 'dev') state.token = null; // a fresh development token per start
  try {
    setStatus('Connecting to the server…', 'busy');
    await bringUp();
  } catch (e) {
    if (e instanceof PageError && !e.fatal && state.phase === 'starting') {
      scheduleReconnect(e); // e.g. the server is not reachable (yet): keep trying, and say so
      return;
    }
    fail(e);
  }
}

async function stop({ reason = 'user', quiet = false } = {}) {
  if (['idle', 'ended', 'failed', 'stopping'].includes(state.phase)) return;
  const hadSession = state.sessionReady;
  state.phase = 'stopping';
  setStatus('Stopping — waiting for the last transcript…', 'busy');
  render();
  if (hadSession) {
    flushPcm();
    const ended = new Promise((resolve) => {
      const t0 = Date.now();
      const check = () => (state.sessionId === null || Date.now() - t0 > 30000 ? resolve() : setTimeout(check, 100));
      check();
    });
    send({ type: RequestType.SessionStop, id: nextId('stop') });
    await ended;
  }
  teardown();
  state.sessionId = null;
  clearInterim();
  state.phase = quiet ? 'failed' : 'idle';
  if (!quiet) setStatus('Stopped. Press Start to transcribe again.', 'idle');
  if (reason === 'user' && !quiet) clearError();
  render();
}

// ---------------------------------------------------------------- wiring ---------------------------

$('transport-ws').checked = state.transport === 'ws';
if (params.get('language')) $('language').value = params.get('language');
$('transport-ws').addEventListener('change', () => {
  state.transportChosen = true;
  state.transport = $('transport-ws').checked ? 'ws' : 'livekit';
  render();
});
$('start').addEventListener('click', start);
$('stop').addEventListener('click', () => stop());
window.addEventListener('pagehide', () => {
  if (state.sessionReady) send({ type: RequestType.SessionStop });
});

if (!LK) {
  showNotice('The LiveKit browser SDK is not available here; the WebSocket fallback still works.');
  if (params.get('transport') !== 'livekit') {
    $('transport-ws').checked = true;
    state.transport = 'ws';
  }
}
render();
window.roomscribe.start = start;
window.roomscribe.stop = stop;
window.roomscribe.ready = true;
if (params.get('autostart') === '1') start();
