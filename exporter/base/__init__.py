"""What every room stands on: one-line errors, hashes and atomic writes, the run directory, optional
libraries, the machine, work spread over processes; the data (data/) and the numerics (numerics/)."""
