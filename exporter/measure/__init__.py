"""What reads built runs: the report, the baseline check and CI gate, doctor, the build matrix over many
models, and the studies that make README's figures (studies/)."""
