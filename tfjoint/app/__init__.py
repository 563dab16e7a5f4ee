"""The `tfjoint` command: absl flags -> `RunConfig` -> `pipeline.run` -> plots and report.

This is the app, not the library: it needs matplotlib and scikit-learn
(`pip install "tfjoint[app]"`), which `import tfjoint` does not.
`tfjoint.app.digits` (scikit-learn's bundled handwritten digits and a small
CNN) and `tfjoint.app.plots` (the command's figures, as functions of a
report) are public: the examples and the notebook use them.
"""
