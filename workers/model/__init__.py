"""Model-environment code (torch, ONNX Runtime): training, export, build, benchmarks' encoders.

Nothing here is imported by the app environment at top level; the CLI reaches it through
``workers.model.runner.run_in_model_env``.
"""
