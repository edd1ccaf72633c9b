# L2 side: just stay up until the VMM is stopped from outside.
echo "bad-input: guest up, waiting to be stopped"
sleep 600
