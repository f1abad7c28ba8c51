"""Audio constants shared by the server, the pipeline, the client and the bench."""

SAMPLE_RATE = 16000
"""Hz. The pipeline's rate: the resampler's target, what the VAD and Whisper read, the ws
transport's preferred PCM rate and the rate of the sample recordings and the bench corpus."""
