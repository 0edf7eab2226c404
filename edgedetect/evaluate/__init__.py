"""`edgedetect eval`: labelled pictures (voc, yolo, coco), their class names mapped to each model's
(labelmap), detections made as the daemon makes them (infer), scored by COCO's own evaluation
(scoring), reported as a table, JSON or Markdown (report) and a plot (plot); command wires them."""
