"""Agents working by mail: signed reply tokens, commands, assignment and relaying."""
