"""What photonflow publishes for others to read while data is taken: every series and every Sardana
scan as a blissdata 2 scan (on a Redis database of its own), and the frame references Sardana's
photonflow channel and recorders exchange. Apart from recording/, which it serves, because
Sardana's clients use it as much as the Recorder."""
