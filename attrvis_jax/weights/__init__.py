"""Reading pretrained weight files and mapping them onto Flax variables."""
