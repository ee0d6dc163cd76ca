"""Live windowed views of payment outcomes (`paystream views`), served by a faust app.

Approximate by design (docs/views.md): faust delivers at least once, so a
repeated event counts twice. Nothing here touches money; the money stages run
on paystream's own loop (docs/design-decisions.md §17).

`windows` and `aggregate` are pure (window arithmetic, the figures of a
window); `app` wires them into faust: topics, tables, agents and web pages.
"""
