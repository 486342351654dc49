"""A plug-in section whose run raises (test fixture): it must be recorded as a failed section."""

from auditor.sections.base import Section


class RaisesSection(Section):
    name = "raises_at_run"
    title = "Raises"
    template = "sections/data_quality.html"

    def run(self, ctx, options):
        raise RuntimeError("deliberate failure of a plug-in section")
