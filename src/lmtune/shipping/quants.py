"""The ``--quant`` values of each ``lmtune export`` format, known without the libraries that write them.

``--format hf --quant int8`` is written by torchao (the int8 extra), the GGUF types by the gguf package
(the gguf extra): an export's arguments are checked, and its messages list the choices, without either.
"""

HF_QUANTS = ("int8",)
GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")
