"""The HTML report: headline numbers, figures with captions, details; one self-contained file.

| file        | role                                                                            |
|-------------|---------------------------------------------------------------------------------|
| headline.py | accuracy per role (forget / adjacent / distant) before → after; layer-l signatures |
| build.py    | Report, ReportFigure, RobustnessSection; build_report() from results            |
| html.py     | render_html(): inline CSS, base64 PNG figures, escaped text, data-key cells      |
| utility.py  | the utility section: perplexity per dataset, gibberish per role, generations     |

    EvalResults + roles ─▶ headline ─┐
    run history, Comparison ────────┼─▶ build_report ─▶ Report ─▶ render_html ─▶ report.html
    Analysis (summary, figures) ─────┘                          └─▶ save_figures ─▶ figures/*.png

Figures come from rmu_lens.plots; the report never loads models or data itself.
"""

from rmu_lens.report.build import Report, ReportFigure, RobustnessSection, build_report
from rmu_lens.report.headline import Headline, RoleAccuracy, build_headline, roles_by_subject

__all__ = [
    "Headline",
    "Report",
    "ReportFigure",
    "RobustnessSection",
    "RoleAccuracy",
    "build_headline",
    "build_report",
    "roles_by_subject",
]
