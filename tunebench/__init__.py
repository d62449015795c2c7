"""tunebench: how much does QLoRA fine-tuning beat zero-/few-shot prompting on domain tasks?

The package holds the pure logic; `stages/` holds the thin command-line wrappers that
DVC runs. Heavy libraries (torch, transformers, peft) are imported inside the
functions that need them so that importing this package stays fast.
"""

__version__ = "0.1.0"
