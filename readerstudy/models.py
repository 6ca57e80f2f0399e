"""Reader studies (the two-task Likert-rated protocol) are built on top of the case library."""
