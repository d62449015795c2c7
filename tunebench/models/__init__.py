"""The model half: model specs and loading, the family table (causal, seq2seq, encoder), the one
training engine, train-qlora's settings, and predict with its generate and loglik modes."""
