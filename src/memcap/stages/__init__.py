"""The stages: what the workflow's rules run (`memcap <stage>`, memcap.cli). Each takes its
arguments and writes its artifacts; a stage imports the library and the model families, never
another stage."""
