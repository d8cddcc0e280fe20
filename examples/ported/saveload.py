"""PyTorch's "Save and Load the Model" tutorial ported to dtrain: only the import lines differ.

torchvision's VGG16 is replaced by a small VGG-shaped model defined here (no torchvision or
pretrained weights here); saving the whole model therefore stores this script's own class.
"""

import dtrain as torch
from dtrain import nn


class TinyVGG(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 32), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


model = TinyVGG()
torch.save(model.state_dict(), "model_weights.pth")

model = TinyVGG()
model.load_state_dict(torch.load("model_weights.pth", weights_only=True))
model.eval()

torch.save(model, "model.pth")
model = torch.load("model.pth", weights_only=False)

input_image = torch.zeros((1, 3, 16, 16))
input_image[0, :, 4:12, 4:12] = 1.0
with torch.no_grad():
    print(model(input_image))
print(model)
