"""Service-level agreements: business calendars, SLA clocks and their deadlines.

``calendar`` (business-time arithmetic) and ``clocks`` (clock semantics over ticket events)
are pure; ``schema`` is the ``calendars:`` and ``plans.*.sla`` part of rules.yaml. This
package module imports nothing, so that ``mailbot.rules.schema`` can use ``sla.schema``.
"""
