"""Offline side: dataset readers, model import/conversion, evaluation, registration."""
