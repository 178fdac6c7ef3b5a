"""paretune's service layer: study specs, launching on Ray, the trial pipeline, fronts, export, CLI."""
