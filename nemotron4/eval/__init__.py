"""Evaluation: perplexity per blend category, translation chrF, HumanEval, LM-Evaluation-Harness suites."""
