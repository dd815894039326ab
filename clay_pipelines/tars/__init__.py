"""TARS: constitutions that change through recorded, reversible amendments, and the experiments
(dreams) that propose such changes."""
