"""Speech-to-text, speech synthesis, the LLM and the end-of-turn check, each behind a small interface and
created by the engine a manifest names (`engine:` in models/manifest.yaml). See `registry` for adding one."""
