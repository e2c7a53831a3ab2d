"""Export: trained weights as the files the server loads."""
