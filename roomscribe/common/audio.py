"""Audio constants shared by the server, the pipeline, the client and the bench."""

SAMPLE_RATE = 16000
"""Hz. The pipeline's rate: the resampler's target, what the VAD and Whisper read, the ws
transport's preferred PCM rate and the rate of the sample recordings and the bench corpus."""

CLIENT_AUDIO_BUFFER_S = 10.0
"""Seconds of audio the client library keeps for resending (`ClientOptions.audio_buffer_s`); the
server's ws audio meter lets this much through at once, so a client catching up after an outage
sends its whole buffer without waiting."""
