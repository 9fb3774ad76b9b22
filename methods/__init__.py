"""Fine-tuning methods, one per file, each registered with `@register_method`.

The harness imports every module here (bench.registry.load_methods); it never names one.
"""
