"""The training kinds ``train.sft`` (full fine-tuning) and ``train.lora`` (LoRA / QLoRA).

Light modules (imported at submit): ``params`` (the pydantic models) and ``sources`` (peeks at data files).
Heavy ones (imported in the job): ``data`` (tokenising), ``packing``, ``attention``, ``modeling``, ``loop``,
``checkpoint``, ``worker`` (one training process), ``launch`` (the node's torchrun), ``step`` (the kinds).
"""
