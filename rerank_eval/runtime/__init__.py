"""What every stage of a run uses to run: progress display (`progress`) and the ranks of a
torchrun job (`distributed`)."""
