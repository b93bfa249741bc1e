"""Part 2 data: the iGSM grade-school-math language, sampler and judge."""
