"""Schema migrations of mailbot.tickets.models (tortoise-orm's migration framework).

Generate the next one with scripts/makemigration NAME; apply with `mailbot migrate`.
"""
