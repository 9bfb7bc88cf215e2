# The trivial job of bench/workers.sh: the Python reference worker with a
# handler that does nothing.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "workers", "python"))
from jobdaemon_worker import serve  # noqa: E402

serve(lambda job: None)
