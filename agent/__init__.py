"""Media agent: the transport-independent transcription pipeline and the LiveKit room agent."""
