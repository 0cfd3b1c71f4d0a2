"""hemalite.train: data loading, splits, model building and fitting (TensorFlow)."""
