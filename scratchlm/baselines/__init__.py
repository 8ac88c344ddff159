"""The models the decoder is compared with, trained and scored on the same data:

* ``classical``: bag-of-words / TF-IDF + logistic regression (classification)
* ``rnn``: RNN / LSTM / GRU classifiers
* ``seq2seq_rnn``: the GRU / LSTM encoder-decoder with attention (translation, summarization)
* ``lead``: the first sentences of the source (summarization)
"""
