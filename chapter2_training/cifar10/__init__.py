"""cifar10: the pipeline training pattern (preprocess -> train -> build -> evaluate) and the service it builds."""
