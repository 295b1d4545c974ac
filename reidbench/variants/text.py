"""CLIP's text tower and CLIP-ReID's prompt learner: one learned text feature per training identity.

CLIP-ReID (Syliz517/CLIP-ReID, model/make_model_clipreid.py) describes every
identity with the prompt "A photo of a X X X X person." whose four X's are
learned vectors of that identity (`PromptLearner`, n_cls_ctx = 4), runs it
through CLIP's frozen text transformer (`TextEncoder`) and takes the feature at
the end-of-text token. The text tower here is open_clip's ViT-B-16 text side,
under the attribute names of CLIP checkpoints (token_embedding,
positional_embedding, transformer, ln_final, text_projection), so it loads from
the same file as the image tower. It is a training-time part: stage 1 learns
the prompts with it and stage 2 keeps only the text features it produced
(`reidbench.variants.clipreid.ClipReidHead.text_features`).

Departures from upstream, named: the text tower is built at the variant's
depth (12, as CLIP's, unless a test lowers it) and, without a weights file,
initialised at random (open_clip's initialisation of the embeddings and the
projection; torch's defaults in the blocks) -- upstream always starts from
OpenAI's weights.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

from reidbench.errors import UsageError
from reidbench.variants.settings import VariantSettings
from reidbench.variants.weights import read_checkpoint, resolve_weights_path
from reidbench.variants.weights.messages import compact_keys

PROMPT_TEMPLATE = "A photo of a X X X X person."
"""CLIP-ReID's template for person datasets (model/make_model_clipreid.py, PromptLearner: ctx_init)."""
CONTEXT_TOKENS = 4
"""Learned vectors per identity, in place of the template's X's (upstream's n_cls_ctx)."""
PREFIX_TOKENS = 5
"""Tokens before the X's: start-of-text and "a photo of a" (upstream's token_prefix, n_ctx + 1)."""
_NOT_TEXT = ("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size")
"""Keys of a whole CLIP file outside both towers."""


def _text_config() -> tuple[dict, int]:
    import open_clip

    config = open_clip.get_model_config("ViT-B-16")
    return config["text_cfg"], config["embed_dim"]


class TextTower(nn.Module):
    """CLIP's text transformer fed with token embeddings instead of token ids, as CLIP-ReID's `TextEncoder`."""

    def __init__(self, depth: int, quick_gelu: bool = True) -> None:
        super().__init__()
        from open_clip.transformer import LayerNorm, QuickGELU, Transformer

        text, embed_dim = _text_config()
        width, length = text["width"], text["context_length"]
        self.token_embedding = nn.Embedding(text["vocab_size"], width)
        self.positional_embedding = nn.Parameter(torch.empty(length, width))
        self.transformer = Transformer(width, depth, text["heads"], act_layer=QuickGELU if quick_gelu else nn.GELU)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)
        # CLIP's text side is causal: each token attends to itself and the tokens before it.
        self.register_buffer("attn_mask", torch.full((length, length), float("-inf")).triu(1), persistent=False)

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    def forward(self, prompts: torch.Tensor, end_of_text: int) -> torch.Tensor:
        """[B, 77, 512] prompt embeddings -> [B, 512] features: the end-of-text token after ln_final, projected."""
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        return x[:, end_of_text] @ self.text_projection


def template_token_ids(template: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """[1, 77] the template's token ids, by open_clip's tokenizer (CLIP's BPE, as upstream's clip.tokenize)."""
    import open_clip

    return open_clip.tokenize(template)


class PromptLearner(nn.Module):
    """Per identity, the template's embedding with its X's replaced by that identity's learned vectors.

    Prefix and suffix are the embeddings of the template's fixed tokens, taken
    once from the text tower's token embedding and kept as buffers (no
    gradient), as upstream's token_prefix / token_suffix. The learned vectors
    start from N(0, 0.02), as upstream's cls_ctx.
    """

    def __init__(self, num_classes: int, token_embedding: nn.Embedding) -> None:
        super().__init__()
        ids = template_token_ids()
        self.register_buffer("token_ids", ids, persistent=False)
        with torch.no_grad():
            embedded = token_embedding(ids.to(token_embedding.weight.device)).detach()
        self.register_buffer("prefix", embedded[:, :PREFIX_TOKENS].clone())
        self.register_buffer("suffix", embedded[:, PREFIX_TOKENS + CONTEXT_TOKENS:].clone())
        self.identity_context = nn.Parameter(torch.randn(num_classes, CONTEXT_TOKENS, token_embedding.embedding_dim) * 0.02)
        self.end_of_text = int(ids.argmax(dim=-1))
        """Position of the end-of-text token: the highest id of the sequence, as upstream finds it."""

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        count = labels.shape[0]
        return torch.cat(
            [self.prefix.expand(count, -1, -1), self.identity_context[labels], self.suffix.expand(count, -1, -1)], dim=1
        )


class IdentityText(nn.Module):
    """Frozen text tower + learned prompts: identity labels -> their text features (CLIP-ReID's get_text path)."""

    def __init__(self, tower: TextTower, num_classes: int) -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False)
        self.prompts = PromptLearner(num_classes, tower.token_embedding)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.tower(self.prompts(labels), self.prompts.end_of_text)


def build_identity_text(settings: VariantSettings, weights: Optional[str | os.PathLike] = None) -> IdentityText:
    """The text side for `settings.num_classes` identities; with `weights`, its tower from that CLIP file."""
    tower = TextTower(settings.depth, settings.clip_quick_gelu)
    if weights is not None:
        load_text_tower(tower, weights)
    return IdentityText(tower, settings.num_classes)


def load_text_tower(tower: TextTower, path: str | os.PathLike) -> int:
    """Fill `tower` from a whole CLIP checkpoint (open_clip or OpenAI's TorchScript), strictly; the number of tensors.

    The text side is everything outside `visual.` but the logit scale and an
    archive's metadata; a file of the visual tower alone has none and is refused.
    """
    file = resolve_weights_path(path, "text tower")
    tensors = {k: v for k, v in read_checkpoint(file).tensors.items() if not k.startswith("visual.") and k not in _NOT_TEXT}
    if "token_embedding.weight" not in tensors:
        raise UsageError(
            f"weights file {file} holds no CLIP text tower (no token_embedding.weight); CLIP-ReID's head learns its "
            "identity prompts through the text tower of the same checkpoint: pass a whole open_clip or OpenAI ViT-B-16 file."
        )
    wanted = tower.state_dict()
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    mismatched = sorted(k for k in set(wanted) & set(tensors) if tensors[k].shape != wanted[k].shape)
    if missing or unexpected or mismatched:
        raise UsageError(
            f"weights file {file}: its text tower does not fit the one built (depth {len(tower.transformer.resblocks)}, "
            f"width {tower.width}); missing {', '.join(compact_keys(missing)) or 'none'}, unexpected {', '.join(compact_keys(unexpected)) or 'none'}, "
            f"other shape {', '.join(compact_keys(mismatched)) or 'none'}. Build the variant at the file's depth (12 for ViT-B-16)."
        )
    tower.load_state_dict(tensors, strict=True)
    return len(tensors)
