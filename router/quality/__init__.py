"""Quality monitoring: QA scorecards and their scoring (scorecard), the evaluation and sampling
queries over the event store (store).  Evaluations are `qa.evaluated` events; the KPIs
`quality_score` and `evaluations` live with the other figures in router.store.kpi."""
