"""The HTML report: headline numbers, figures with captions, details; one self-contained file.

| file        | role                                                                            |
|-------------|---------------------------------------------------------------------------------|
| headline.py | accuracy per role (forget / adjacent / distant) before → after; layer-l signatures |
| build.py    | Report, ReportFigure, RobustnessSection, RecoverySection; build_report()        |
| html.py     | render_html(): templates/report.html (autoescaped), base64 PNG figures, data-key |
| utility.py  | the utility section (templates/utility.html): perplexity, gibberish, generations |

    EvalResults + roles ─▶ headline ─┐
    run history, Comparison ────────┼─▶ build_report ─▶ Report ─▶ render_html ─▶ report.html
    Analysis (summary, figures) ─────┘                          └─▶ save_figures ─▶ figures/*.png

Figures come from rmu_lens.plots; the report never loads models or data itself.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "build": ["RecoverySection", "Report", "ReportFigure", "RobustnessSection", "build_report"],
    "headline": ["Headline", "RoleAccuracy", "build_headline", "roles_by_subject"],
})
