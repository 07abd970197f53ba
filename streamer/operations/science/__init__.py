"""The science proof: star fields with a truth table (made independently of the camera
simulator), the measurements an astronomer makes on a restored frame, and the bench profile
that prints them beside the raw frame's."""
