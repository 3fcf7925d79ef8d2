<?php
// Document root of the example configs in this folder (tqsup.example.*, worker.yaml).
echo "tqsup example\n";
