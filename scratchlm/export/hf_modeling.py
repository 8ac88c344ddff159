# Copied by `scratchlm export --format hf` into exported mean-pooling classifiers as modeling_scratchlm.py,
# and loaded by transformers with trust_remote_code=True. It depends on torch and transformers only.
"""LlamaForSequenceClassification with mean pooling over the real (non-pad) tokens.

Hugging Face's own class pools the hidden state of the last non-pad token; scratchlm classifiers trained with
``pooling: mean`` average the final hidden states of all real tokens instead. Everything else (the Llama
backbone, the bias-free ``score`` layer, the loss) is the stock class's.
"""

from __future__ import annotations

import torch
from transformers import LlamaForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast


class ScratchLMForSequenceClassification(LlamaForSequenceClassification):
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, **kwargs):
        if getattr(self.config, "pooling", "last") != "mean":
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                                   use_cache=use_cache, **kwargs)
        if past_key_values is not None:  # a classifier reads whole texts; passed on only when given
            kwargs["past_key_values"] = past_key_values
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        hidden = out.last_hidden_state
        if attention_mask is not None:
            real = attention_mask.to(hidden.device)
        elif input_ids is not None and self.config.pad_token_id is not None:
            real = (input_ids != self.config.pad_token_id).to(hidden.device)
        else:
            real = torch.ones(hidden.shape[:2], device=hidden.device)
        w = real.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)
        logits = self.score(pooled)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits,
                                                past_key_values=getattr(out, "past_key_values", None),
                                                hidden_states=out.hidden_states, attentions=out.attentions)
