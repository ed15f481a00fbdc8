//! Stereo runs (base and chat on the same tokens) and the on-disk activation store.
