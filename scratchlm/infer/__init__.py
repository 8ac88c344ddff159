"""The inference engine: everything that runs a trained model rather than trains it.

* ``generate``: batched, KV-cached sampling (greedy, temperature, top-k/top-p, penalties, stop strings)
* ``beam``: beam search, one loop for the decoder and the recurrent encoder-decoder baseline
* ``decode_pack``: the decoder's weights rearranged for decoding a few tokens at a time on a CPU
* ``classify`` / ``seq2seq``: a loaded classifier's probabilities, a loaded seq2seq model's outputs
* ``quantize``: int8 model folders
"""
