"""Reading, normalising, counting and splitting Korean QA data (installed as ``koqa.data_tools``)."""
