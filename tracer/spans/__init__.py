"""Spans: the model the exporters take (model), its building from a pod's
processes and CRI calls (build), the diagnosis of failed starts, and the
critical path of each start."""
