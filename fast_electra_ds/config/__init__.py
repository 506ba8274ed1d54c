"""What a run is told: the run configuration and its YAML presets and overrides (run_config), the
DeepSpeed JSON completed for this machine (ds_config), and the shipped configs, DeepSpeed JSONs and
launcher scripts looked up in a wheel or a checkout (shipped); the values no run can use, checked at
load (values), and the checks that need files or the methods, before any process group (validate)."""
