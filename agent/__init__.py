"""wacall: an AI voice agent for WhatsApp Business Calling."""

import os

# numpy's OpenBLAS keeps a worker thread spinning after each feature step; on a 2-core machine that thread
# competes with the inference pool (measured: Whisper's transcript cost 262 ms of CPU with it, 157 ms
# without, same wall time). Must be set before numpy loads; an operator's own value is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
