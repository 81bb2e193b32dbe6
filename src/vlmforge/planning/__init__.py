"""Planning before any GPU is rented: FLOPs, memory per GPU, time and cost, calibrated on published runs."""
