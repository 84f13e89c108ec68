"""IVR flows written in YAML: schema, validator, interpreter, hot reload.

`check_flows(path)` validates a flow directory into a versioned `FlowSet`;
`FlowSession` runs one call through it (sans-IO: inputs in, commands and
events out); `FlowRegistry` reloads the directory and keeps the running
version when a new one has errors.  See docs/ivr.md for the file format.
"""
from router.ivr.graph import render
from router.ivr.model import Flow, FlowNode, FlowSet
from router.ivr.registry import (FlowError, FlowRegistry, ReloadResult, flows_directory, load_flowset,
                                 sighup_handler, watch)
from router.ivr.session import (Collect, Digits, Enqueue, FlowSession, Hangup, HungUp, InvalidInput, NoInput,
                                OfferCallback, Play, PromptDone, Say, Transfer, TransferResult, Voicemail)
from router.ivr.testing import TestReport, run_tests
from router.ivr.validate import check_flows, check_sources

__all__ = ["Collect", "Digits", "Enqueue", "Flow", "FlowError", "flows_directory", "load_flowset", "FlowNode", "FlowRegistry", "FlowSession", "FlowSet",
           "Hangup", "HungUp", "InvalidInput", "NoInput", "OfferCallback", "Play", "PromptDone",
           "ReloadResult", "Say", "TestReport", "Transfer", "TransferResult", "Voicemail", "check_flows",
           "check_sources", "render", "run_tests", "sighup_handler", "watch"]
