<?php
echo "tqsup demo\n";
