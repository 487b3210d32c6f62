import sys

from .cli import main

sys.exit(main(prog="python -m llama_stack_milvus_devtools"))
