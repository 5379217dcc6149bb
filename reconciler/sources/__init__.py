"""Remote sources (layer L2: they read the network): resolving a Hugging Face repo or a URL into
the files to fetch (:mod:`.hf`, :mod:`.url`), and fetching one file into staging, resumable and
verified (:mod:`.http`). Only :mod:`.hf` imports ``huggingface_hub``; it is imported on first use,
so commands that never touch the Hub do not pay for it."""
