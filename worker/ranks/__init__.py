"""A job over several devices (`training.devices` > 1), in one direction: the task's side (`parent`)
writes `launch.json` (`protocol`) and runs the launcher process (`launcher`), whose torchrun starts one
`rank` per device; each rank runs the job as one process does (`worker.engine_run`) and leaves its
result or failure (`protocol`) for the task to read back. The launcher and the ranks die with the
process that started them (`lifeline`)."""
